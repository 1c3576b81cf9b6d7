function result = hcCallPython(req, opts)
    % HCCALLPYTHON  Send a request to the Python bridge and return its result (internal).
    %   RESULT = HCCALLPYTHON(REQ, OPTS) writes REQ (see hcRequest) to a -v7 .mat file, has Python run
    %   bridge.transport.matfile on it through the transport OPTS.Transport, reads the response file and
    %   returns its Result. Transports:
    %     'server'      (default) a persistent Python worker, started on first use and reused (see
    %                   hcTransportServer): the Python start-up is paid once per session
    %     'subprocess'  a separate 'python -m' process per call (seconds each: it imports PyTorch)
    %     'py'          MATLAB's own py. interface, in-process or out-of-process as pyenv says
    %     'auto'        hessiancoreSetup's saved choice (or HESSIANCORE_TRANSPORT), else 'server'
    %   A Python exception becomes a MATLAB error with the identifier the bridge chose
    %   ('hessiancore:invalidInput', 'hessiancore:memoryBudget', ...).
    transport = opts.Transport;
    if strcmp(transport, 'auto')
        transport = lower(hcPreference('Transport', 'server'));
    end
    if strcmp(transport, 'auto')
        transport = 'server';
    end
    reqFile = [tempname(), '_hcrequest.mat'];
    respFile = [tempname(), '_hcresponse.mat'];
    cleanup = onCleanup(@() deleteFiles({reqFile, respFile}));
    hcSaveRequest(reqFile, req);
    switch transport
        case 'server'
            hcTransportServer(reqFile, respFile, opts.Python);
        case 'subprocess'
            hcTransportSubprocess(reqFile, respFile, opts.Python);
        case 'py'
            hcTransportPy(reqFile, respFile);
        otherwise
            error('hessiancore:invalidOption', ['unknown Transport ''%s''; use ''server'', ''subprocess'' ', ...
                                                'or ''py'''], transport);
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
