function hcTransportServer(reqFile, respFile, python)
    % HCTRANSPORTSERVER  Have a persistent Python worker answer a request file (internal).
    %   HCTRANSPORTSERVER(REQFILE, RESPFILE, PYTHON) moves the request into the worker's folder as
    %   ID.request.mat (written under another name first, then renamed: the worker never reads half a
    %   file), waits for ID.response.mat and moves it to RESPFILE. The Python start-up (importing
    %   PyTorch, seconds) is paid once per session instead of per call.
    %
    %   By default the toolbox manages the worker: the first call starts one for this session
    %   (hcStartWorker, folder hcWorkerFolder(PYTHON)) and later calls reuse it. With the 'ServerFolder'
    %   setting (hessiancoreSetup, or the environment variable HESSIANCORE_SERVERFOLDER) a worker the user
    %   started with "python -m bridge.transport.matfile --serve FOLDER" answers instead. 'ServerTimeout'
    %   (seconds, default Inf) bounds the wait; a worker that stops while a request waits is noticed within
    %   seconds: an unanswered request is handed to a new worker, one it was working on raises an error.
    if isempty(python)
        python = hcPythonExecutable();
    end
    folder = hcPreference('ServerFolder', '');
    managed = isempty(folder);
    if managed
        folder = hcWorkerFolder(python);
        hcStartWorker(folder, python);
    elseif ~hcWorkerAlive(folder)
        error('hessiancore:transport', ['no hessiancore worker serves the folder ''%s'': start ', ...
                                        '"python -m bridge.transport.matfile --serve %s", or unset ', ...
                                        'HESSIANCORE_SERVERFOLDER (setpref(''hessiancore'', ''ServerFolder'', ', ...
                                        '[])) to let the toolbox start its own worker'], folder, folder);
    end
    timeout = hcPreference('ServerTimeout', Inf);
    if ischar(timeout)
        timeout = str2double(timeout);
    end
    [~, id] = fileparts(tempname());
    id = regexprep(id, '[^A-Za-z0-9_-]', '_');
    partial = fullfile(folder, [id, '.partial-request.mat']);
    request = fullfile(folder, [id, '.request.mat']);
    response = fullfile(folder, [id, '.response.mat']);
    movefile(reqFile, partial);
    movefile(partial, request);
    start = tic();
    lastCheck = 0;
    while ~exist(response, 'file')
        elapsed = toc(start);
        if elapsed > timeout
            error('hessiancore:transport', 'no response from the hessiancore worker in %g s (folder %s)', ...
                  timeout, folder);
        end
        if elapsed - lastCheck > 2
            lastCheck = elapsed;
            if ~hcWorkerAlive(folder) && ~exist(response, 'file')
                if ~exist(request, 'file')
                    error('hessiancore:transport', ['the hessiancore worker stopped while working on this ', ...
                                                    'request; its log: %s'], [folder, '.log']);
                elseif managed
                    hcStartWorker(folder, python);
                else
                    error('hessiancore:transport', 'the hessiancore worker serving ''%s'' stopped', folder);
                end
            end
        end
        pause(0.001);
    end
    movefile(response, respFile);
end
