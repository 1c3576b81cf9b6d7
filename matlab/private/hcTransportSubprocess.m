function hcTransportSubprocess(reqFile, respFile, python)
    % HCTRANSPORTSUBPROCESS  Run 'python -m bridge.transport.matfile REQFILE RESPFILE' (internal).
    %   Works with any Python version, in MATLAB and Octave, because nothing but .mat files crosses.
    %   PYTHON is the executable ('' for hessiancoreSetup's choice). See hcSetPythonPath.
    if isempty(python)
        python = hcPythonExecutable();
    end
    oldPath = hcSetPythonPath();
    restore = onCleanup(@() setenv('PYTHONPATH', oldPath));
    cmd = sprintf('"%s" -m bridge.transport.matfile "%s" "%s" 2>&1', python, reqFile, respFile);
    [status, out] = system(cmd);
    clear('restore');
    if status ~= 0
        error('hessiancore:transport', ['the Python subprocess failed (exit %d):\n  %s\n%s\n', ...
                                        'Run hessiancoreSetup to check the Python environment.'], ...
              status, cmd, strtrim(out));
    end
end
