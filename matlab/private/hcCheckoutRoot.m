function root = hcCheckoutRoot()
    % HCCHECKOUTROOT  The hessiancore source checkout this toolbox folder sits in, or '' (internal).
    %   ROOT = HCCHECKOUTROOT() is the folder holding both matlab/ (this toolbox) and bridge/ when the
    %   toolbox is used from a checkout: its Python bridge, which matches these .m files, must then come
    %   first on Python's path (hcSetPythonPath, hcTransportPy). An installed toolbox (the folder that
    %   "python -m bridge.matlab_path" prints, inside the Python package) gives ''.
    toolbox = fileparts(fileparts(mfilename('fullpath')));
    root = fileparts(toolbox);
    if ~exist(fullfile(root, 'bridge', 'transport', 'matfile.py'), 'file')
        root = '';
    end
end
