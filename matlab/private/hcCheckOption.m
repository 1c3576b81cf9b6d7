function [ok, value, allowed] = hcCheckOption(kind, choices, value)
    % HCCHECKOPTION  Check one option value against its kind (see hcOptions); normalize it (internal).
    %   [OK, VALUE, ALLOWED] = HCCHECKOPTION(KIND, CHOICES, VALUE): OK is true when VALUE is allowed; VALUE
    %   comes back normalized (text as char, a choice spelled as in CHOICES, logical as logical); ALLOWED
    %   says in words what the option takes, for error messages.
    isText = (ischar(value) && (isempty(value) || isrow(value))) || (isstring(value) && isscalar(value));
    isScalarNumber = (isnumeric(value) || islogical(value)) && isscalar(value) && isreal(value) && ...
                     ~issparse(value);
    isInteger = isScalarNumber && isfinite(value) && value == round(value);
    switch kind
        case 'choice'
            allowed = quoteList(choices);
            k = [];
            if isText
                k = find(strcmpi(char(value), choices), 1);
            end
            ok = ~isempty(k);
            if ok
                value = choices{k};
            end
        case 'text'
            allowed = 'text (a character vector or string scalar)';
            ok = isText;
        case 'struct'
            allowed = 'a scalar struct';
            ok = isstruct(value) && isscalar(value);
        case 'count'
            allowed = 'a positive integer';
            ok = isInteger && value >= 1;
        case 'seed'
            allowed = '[] (a random seed) or a nonnegative integer';
            ok = (isnumeric(value) && isempty(value)) || (isInteger && value >= 0);
        case 'nonneg'
            allowed = 'a finite number >= 0';
            ok = isScalarNumber && isfinite(value) && value >= 0;
        case 'positive'
            allowed = 'a finite number > 0';
            ok = isScalarNumber && isfinite(value) && value > 0;
        case 'budget'
            allowed = '[] (the default budget), a number of bytes > 0, or text such as ''2GB''';
            ok = (isnumeric(value) && isempty(value)) || isText || (isScalarNumber && value > 0);
        case 'function'
            allowed = '[] or a function handle, LOSS = F(NET, X, T)';
            ok = (isnumeric(value) && isempty(value)) || isa(value, 'function_handle');
        case 'logical'
            allowed = 'true or false';
            ok = isScalarNumber && (value == 0 || value == 1);
            if ok
                value = logical(value);
            end
        otherwise
            error('hessiancore:invalidInput', 'hcCheckOption: unknown kind ''%s''', kind);
    end
    if ok && isText
        value = char(value);
    end
    if ok && isScalarNumber && ~islogical(value)
        value = double(value);
    end
end

function text = quoteList(items)
    quoted = cellfun(@(s) ['''', s, ''''], items, 'UniformOutput', false);
    if numel(quoted) == 1
        text = quoted{1};
    else
        text = [strjoin(quoted(1:end - 1), ', '), ' or ', quoted{end}];
    end
end
