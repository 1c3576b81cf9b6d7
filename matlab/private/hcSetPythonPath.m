function oldPath = hcSetPythonPath()
    % HCSETPYTHONPATH  Put this toolbox's hessiancore checkout first on PYTHONPATH; return the old value (internal).
    %   When the toolbox folder sits in a hessiancore checkout (matlab/ next to bridge/), the Python
    %   subprocess must import that checkout's bridge, matching these .m files, rather than another
    %   installed version. Restore with setenv('PYTHONPATH', OLDPATH).
    oldPath = getenv('PYTHONPATH');
    root = hcCheckoutRoot();
    if ~isempty(root)
        if isempty(oldPath)
            setenv('PYTHONPATH', root);
        else
            setenv('PYTHONPATH', [root, pathsep, oldPath]);
        end
    end
end
