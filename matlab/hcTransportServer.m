function hcTransportServer(reqFile, respFile, folder, timeout)
    % HCTRANSPORTSERVER  Hand a request to a running Python worker through a shared folder (internal).
    %   The worker, started once with
    %     python -m bridge.transport.matfile --serve FOLDER
    %   answers ID.request.mat with ID.response.mat, so the Python start-up (importing PyTorch, seconds) is
    %   paid once instead of per call. Files are moved into place by renaming, so neither side reads half
    %   a file. FOLDER and TIMEOUT (seconds) come from the 'ServerFolder' and 'ServerTimeout' settings
    %   (hessiancoreSetup, or the environment variables HESSIANCORE_SERVERFOLDER, HESSIANCORE_SERVERTIMEOUT).
    if isempty(folder) || ~exist(folder, 'dir')
        error('hessiancore:transport', ['the server transport needs the folder of a running worker: start ', ...
                                        '"python -m bridge.transport.matfile --serve FOLDER" and set ', ...
                                        'HESSIANCORE_SERVERFOLDER ', ...
                                        '(or setpref(''hessiancore'', ''ServerFolder'', FOLDER)); got ''%s'''], folder);
    end
    [~, id] = fileparts(tempname());
    partial = fullfile(folder, [id, '.partial-request.mat']);
    copyfile(reqFile, partial);
    movefile(partial, fullfile(folder, [id, '.request.mat']));
    response = fullfile(folder, [id, '.response.mat']);
    start = tic();
    while ~exist(response, 'file')
        if toc(start) > timeout
            error('hessiancore:transport', ['no response from the hessiancore worker in %g s (folder %s): is ', ...
                                            '"python -m bridge.transport.matfile --serve" running there?'], ...
                  timeout, folder);
        end
        pause(0.005);
    end
    movefile(response, respFile);
end
