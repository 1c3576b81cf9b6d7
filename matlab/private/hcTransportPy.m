function hcTransportPy(reqFile, respFile)
    % HCTRANSPORTPY  Run the bridge through MATLAB's py. interface (MATLAB only; internal).
    %   Calls bridge.transport.matfile.run(REQFILE, RESPFILE) in the Python that pyenv has loaded
    %   (in-process, or out-of-process with pyenv('ExecutionMode', 'OutOfProcess'), which keeps PyTorch's
    %   libraries apart from MATLAB's). Same files as the subprocess transport, so shapes, column-major
    %   order and types cross exactly as there; only the way Python is started differs.
    if hcIsOctave()
        error('hessiancore:transport', 'the ''py'' transport needs MATLAB; use ''Transport'', ''subprocess''');
    end
    root = hcCheckoutRoot();
    try
        % A checkout next to this toolbox comes first, as for the subprocess transport (hcSetPythonPath).
        if ~isempty(root) && count(py.sys.path, root) == 0
            insert(py.sys.path, int32(0), root);
        end
        py.bridge.transport.matfile.run(reqFile, respFile);
    catch err
        error('hessiancore:transport', ['calling Python through py. failed: %s\n', 'Run hessiancoreSetup ', ...
                                        'to check pyenv and the hessiancore install.'], err.message);
    end
end
