function folder = hcWorkerFolder(python)
    % HCWORKERFOLDER  The folder of this session's own worker for the Python executable PYTHON (internal).
    %   FOLDER = HCWORKERFOLDER(PYTHON) is tempdir/hessiancore-PID-HASH: one worker per MATLAB or Octave
    %   process, Python executable and toolbox folder, so sessions and installs never share a worker. The
    %   worker creates the folder private to the user.
    key = [python, pathsep, fileparts(fileparts(mfilename('fullpath')))];
    hash = 0;
    for c = double(key)
        hash = mod(hash * 31 + c, 2147483647);
    end
    folder = fullfile(tempdir(), sprintf('hessiancore-%d-%08x', hcProcessId(), hash));
end
