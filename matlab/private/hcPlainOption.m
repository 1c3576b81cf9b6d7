function value = hcPlainOption(value, where)
    % HCPLAINOPTION  An option value as plain data that reaches Python intact (internal).
    %   VALUE = HCPLAINOPTION(VALUE, WHERE) converts, at any depth of structs and cells: a string scalar
    %   to char, a string array to a cellstr of its shape; dlarray and gpuArray values to their data.
    %   A MATLAB string saved to a -v7 .mat file is an object that scipy.io.loadmat cannot read, so no
    %   string may remain. What cannot cross -- function handles, other objects, sparse or complex
    %   numbers, struct arrays, multi-row char -- raises 'hessiancore:invalidInput' naming WHERE (e.g.
    %   '''LossOptions''.Mode') and the type.
    if isstring(value)
        if isscalar(value)
            value = char(value);
        else
            value = reshape(cellstr(value), size(value));
        end
    elseif ischar(value)
        if ~(isempty(value) || isrow(value))
            refuse(where, sprintf('a %dx%d char array (several rows)', size(value, 1), size(value, 2)));
        end
    elseif isstruct(value)
        if ~isscalar(value)
            refuse(where, sprintf('a %s struct array', sizeText(value)));
        end
        fields = fieldnames(value);
        for i = 1:numel(fields)
            value.(fields{i}) = hcPlainOption(value.(fields{i}), [where, '.', fields{i}]);
        end
    elseif iscell(value)
        for i = 1:numel(value)
            value{i} = hcPlainOption(value{i}, sprintf('%s{%d}', where, i));
        end
    elseif isa(value, 'dlarray') || isa(value, 'gpuArray')
        value = hcPlainOption(hcToDouble(value), where);
    elseif isnumeric(value) || islogical(value)
        if issparse(value)
            refuse(where, 'a sparse array');
        elseif ~isreal(value)
            refuse(where, 'complex');
        end
    elseif isa(value, 'function_handle')
        refuse(where, sprintf('a function handle (%s)', func2str(value)));
    else
        refuse(where, sprintf('a %s', class(value)));
    end
end

function refuse(where, what)
    error('hessiancore:invalidInput', ['%s is %s, which cannot be sent to Python: give text, numbers, ', ...
                                       'logicals, or structs and cells of them'], where, what);
end

function text = sizeText(value)
    text = strjoin(arrayfun(@num2str, size(value), 'UniformOutput', false), 'x');
end
