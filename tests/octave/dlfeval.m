function varargout = dlfeval(fun, varargin)
    % Octave test double of MATLAB's dlfeval (Deep Learning Toolbox):
    %   [y1, ..., yk] = dlfeval(fun, x1, ..., xn) evaluates fun(x1, ..., xn) with automatic
    %   differentiation enabled: the dlarray objects among the inputs (also inside cell arrays,
    %   structures, tables and a dlnetwork's Learnables) are traced, so that fun can call dlgradient.
    %   The outputs are returned without trace.
    % Pages: https://www.mathworks.com/help/deeplearning/ref/dlfeval.html and "Use Automatic
    % Differentiation In Deep Learning Toolbox" (.../deeplearning/ug/include-automatic-differentiation.html):
    % "The dlgradient call must be inside of the function that dlfeval evaluates". That the outputs are
    % untraced and which containers are searched for inputs is what the double assumes (the pages show
    % dlnetwork, dlarray and numeric inputs); nested dlfeval calls get a trace of their own.
    % The trace itself is kept by the dlarray double (see dlarray.m).
    if ~isa(fun, 'function_handle')
        error('dlfeval:invalidFunction', 'the first input of dlfeval must be a function handle');
    end
    previous = dlarray.traceBegin();
    try
        args = varargin;
        for i = 1:numel(args)
            args{i} = mapDlarrays(args{i}, @dlarray.leaf);
        end
        [varargout{1:max(nargout, 1)}] = fun(args{:});
    catch err
        dlarray.traceEnd(previous);
        rethrow(err);
    end
    dlarray.traceEnd(previous);
    for i = 1:numel(varargout)
        varargout{i} = mapDlarrays(varargout{i}, @dlarray.untraced);
    end
end

function x = mapDlarrays(x, fcn)
    % fcn applied to every dlarray in x (dlarray, cell, struct, table double, dlnetwork double).
    if isa(x, 'dlarray')
        x = fcn(x);
    elseif iscell(x)
        for i = 1:numel(x)
            x{i} = mapDlarrays(x{i}, fcn);
        end
    elseif isstruct(x)
        names = fieldnames(x);
        for j = 1:numel(x)
            for k = 1:numel(names)
                x(j).(names{k}) = mapDlarrays(x(j).(names{k}), fcn);
            end
        end
    elseif isa(x, 'table')
        names = x.Properties.VariableNames;
        for k = 1:numel(names)
            column = x.(names{k});
            if iscell(column)
                x.(names{k}) = mapDlarrays(column, fcn);
            end
        end
    elseif isa(x, 'dlnetwork')
        x.Learnables = mapDlarrays(x.Learnables, fcn);
    end
end
