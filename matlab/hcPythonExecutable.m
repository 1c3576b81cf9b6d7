function python = hcPythonExecutable()
    % HCPYTHONEXECUTABLE  The Python executable of the subprocess transport (internal).
    %   From hessiancoreSetup's saved choice, else the environment variable HESSIANCORE_PYTHON, else
    %   (MATLAB) pyenv's executable, else 'python3' ('python' on Windows).
    python = hcPreference('Python', '');
    if isempty(python) && ~hcIsOctave()
        env = pyenv();
        python = char(env.Executable);
    end
    if isempty(python)
        python = 'python3';
        if ispc()
            python = 'python';
        end
    end
end
