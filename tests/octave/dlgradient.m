function varargout = dlgradient(y, varargin)
    % Octave test double of MATLAB's dlgradient (Deep Learning Toolbox):
    %   [dydx1, ..., dydxk] = dlgradient(y, x1, ..., xk, Name, Value) returns the gradients of the traced
    %   real scalar dlarray y with respect to x1 ... xk: dlarray objects, or cell arrays, structures or
    %   tables (Learnables: the Value variable) of them; each gradient has the form of its x (a table
    %   gradient is a copy of the table with Value replaced, as dlgradient(loss, net.Learnables) gives).
    %   Options: 'RetainData' (default false), 'EnableHigherDerivatives' (default false).
    % Pages: https://www.mathworks.com/help/deeplearning/ref/dlarray.dlgradient.html ("Call dlgradient from
    % inside a function passed to dlfeval"; RetainData; EnableHigherDerivatives "traces the backward pass"),
    % MathWorks Answers 587696 (a second derivative needs 'EnableHigherDerivatives', true "otherwise you
    % will get an error"; no higher derivatives through gru, lstm, embed, prod, interp1 as of R2024a) and
    % 2051972 (the message "Value to differentiate is non-scalar. It must be a traced real dlarray
    % scalar."). NOT confirmed by a page: the other messages and all identifiers below, and that
    % x must itself be traced (the double errors).
    names = {'RetainData', 'EnableHigherDerivatives'};
    first = find(cellfun(@(a) ischar(a) || (isstring(a) && isscalar(a)), varargin), 1);
    if isempty(first)
        first = numel(varargin) + 1;
    end
    xs = varargin(1:first - 1);
    opts = struct('RetainData', false, 'EnableHigherDerivatives', false);
    rest = varargin(first:end);
    if mod(numel(rest), 2) ~= 0
        error('dlgradient:nameValue', 'dlgradient: options must be name-value pairs');
    end
    for i = 1:2:numel(rest)
        k = find(strcmpi(char(rest{i}), names), 1);
        if isempty(k)
            error('dlgradient:nameValue', 'dlgradient: unknown option ''%s''', char(rest{i}));
        end
        opts.(names{k}) = logical(rest{i + 1});
    end
    if isempty(xs)
        error('dlgradient:noVariables', 'dlgradient needs at least one variable to differentiate with respect to');
    end
    if nargout > numel(xs)
        error('dlgradient:nargout', 'dlgradient: %d outputs requested for %d variables', nargout, numel(xs));
    end
    if ~dlarray.tracing()
        error('dlgradient:notInDlfeval', ['dlgradient must be called inside a function evaluated by dlfeval: ', ...
                                          'use [...] = dlfeval(@fun, ...)']);
    end
    if ~isa(y, 'dlarray')
        error('dlgradient:notDlarray', 'Value to differentiate must be a traced real dlarray scalar.');
    end
    if numel(y) ~= 1
        error('dlgradient:nonScalar', 'Value to differentiate is non-scalar. It must be a traced real dlarray scalar.');
    end
    if ~dlarray.isTraced(y)
        error('dlgradient:notTraced', 'Value to differentiate is not traced. It must be a traced real dlarray scalar.');
    end
    items = {};
    for i = 1:numel(xs)
        items = collect(xs{i}, items);
    end
    grads = dlarray.backprop(y, items, opts.EnableHigherDerivatives, opts.RetainData);
    k = 0;
    varargout = cell(1, max(nargout, 1));
    for i = 1:numel(varargout)
        [varargout{i}, k] = replace(xs{i}, grads, k);
    end
end

function items = collect(x, items)
    if isa(x, 'dlarray')
        if ~dlarray.isTraced(x)
            error('dlgradient:variableNotTraced', ['dlgradient: a variable to differentiate with respect to ', ...
                                                   'is not traced (pass it to dlfeval as an input)']);
        end
        items{end + 1} = x;
    elseif iscell(x)
        for i = 1:numel(x)
            items = collect(x{i}, items);
        end
    elseif isstruct(x)
        names = fieldnames(x);
        for j = 1:numel(x)
            for n = 1:numel(names)
                items = collect(x(j).(names{n}), items);
            end
        end
    elseif isa(x, 'table')
        items = collect(x.Value, items);
    else
        error('dlgradient:invalidVariable', ['dlgradient: variables must be dlarray objects or cell arrays, ', ...
                                             'structures or tables of them; got a %s'], class(x));
    end
end

function [x, k] = replace(x, grads, k)
    if isa(x, 'dlarray')
        k = k + 1;
        x = grads{k};
    elseif iscell(x)
        for i = 1:numel(x)
            [x{i}, k] = replace(x{i}, grads, k);
        end
    elseif isstruct(x)
        names = fieldnames(x);
        for j = 1:numel(x)
            for n = 1:numel(names)
                [x(j).(names{n}), k] = replace(x(j).(names{n}), grads, k);
            end
        end
    elseif isa(x, 'table')
        [values, k] = replace(x.Value, grads, k);
        x.Value = values;
    end
end
