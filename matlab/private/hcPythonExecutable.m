function python = hcPythonExecutable()
    % HCPYTHONEXECUTABLE  The Python executable the worker and the subprocess transport run (internal).
    %   The environment variable HESSIANCORE_PYTHON, else hessiancoreSetup's saved choice, else
    %   (MATLAB) pyenv's executable (python.exe for a pythonw.exe), else 'python3' ('python' on Windows).
    python = hcPreference('Python', '');
    if isempty(python) && ~hcIsOctave()
        env = pyenv();  % reads the settings only: it neither loads nor changes Python
        python = char(env.Executable);
        if ~isempty(python)
            python = hcConsolePython(python);  % pyenv may name pythonw.exe
        end
    end
    if isempty(python)
        python = 'python3';
        if ispc()
            python = 'python';
        end
    end
end
