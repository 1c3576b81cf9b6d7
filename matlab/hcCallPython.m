function result = hcCallPython(req, opts)
    % HCCALLPYTHON  Send a request to the Python bridge and return its result (internal).
    %   RESULT = HCCALLPYTHON(REQ, OPTS) writes REQ (see hcRequest) to a -v7 .mat file, has Python run
    %   bridge.transport.matfile on it through the transport OPTS.Transport ('subprocess': a separate
    %   'python -m' process, works in MATLAB and Octave with any Python; 'py': MATLAB's own py. interface,
    %   in-process or out-of-process as pyenv says; 'server': a running Python worker, see
    %   hcTransportServer; 'auto': hessiancoreSetup's choice, else 'subprocess'),
    %   reads the response file and returns its Result. A Python exception becomes a MATLAB error with
    %   the identifier the bridge chose ('hessiancore:invalidInput', 'hessiancore:memoryBudget', ...).
    transport = opts.Transport;
    if strcmp(transport, 'auto')
        transport = hcPreference('Transport', 'subprocess');
    end
    reqFile = [tempname(), '_hcrequest.mat'];
    respFile = [tempname(), '_hcresponse.mat'];
    cleanup = onCleanup(@() deleteFiles({reqFile, respFile}));
    save(reqFile, '-struct', 'req', '-v7');
    switch transport
        case 'subprocess'
            hcTransportSubprocess(reqFile, respFile, opts.Python);
        case 'py'
            hcTransportPy(reqFile, respFile);
        case 'server'
            timeout = hcPreference('ServerTimeout', 600);
            if ischar(timeout)
                timeout = str2double(timeout);
            end
            hcTransportServer(reqFile, respFile, hcPreference('ServerFolder', ''), timeout);
        otherwise
            error('hessiancore:invalidOption', 'unknown Transport ''%s''; use ''subprocess'', ''py'' or ''server''', ...
                  transport);
    end
    if ~exist(respFile, 'file')
        error('hessiancore:transport', 'Python wrote no response (%s transport); run hessiancoreSetup to check', ...
              transport);
    end
    resp = load(respFile);
    if ~resp.Ok
        err = resp.Error;
        error(err.Identifier, '%s', err.Message);
    end
    result = resp.Result;
    clear('cleanup');
end

function deleteFiles(files)
    for i = 1:numel(files)
        if exist(files{i}, 'file')
            delete(files{i});
        end
    end
end
