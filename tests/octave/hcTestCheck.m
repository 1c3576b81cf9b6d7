function value = hcTestCheck(value, kind, name, varargin)
    % Validate a layer property value as the documented layer constructors do (test doubles only).
    %   VALUE = hcTestCheck(VALUE, KIND, NAME, ...) returns VALUE (normalized) or raises
    %   'hessiancoreTest:invalidProperty' naming the property. KIND:
    %     'posint'     positive integer scalar            'posints', N   1 or N positive integers (-> 1xN)
    %     'nonnegints', N  1, 2 or 4 nonnegative integers  'scalar'       real numeric scalar
    %     'member', LIST  text in LIST (case-insensitive; returned as spelled in LIST)
    %     'logical'    true/false                        'auto-or-posint'  'auto' or a positive integer
    %     'numeric'    any real numeric array (or [])
    % The error identifiers are the double's own: MathWorks does not document the layers' identifiers.
    bad = @(what) error('hessiancoreTest:invalidProperty', '%s must be %s', name, what);
    isText = (ischar(value) && (isempty(value) || isrow(value))) || (isstring(value) && isscalar(value));
    switch kind
        case 'posint'
            if ~(isnumeric(value) && isscalar(value) && isreal(value) && value >= 1 && value == round(value))
                bad('a positive integer');
            end
            value = double(value);
        case 'posints'
            n = varargin{1};
            if ~(isnumeric(value) && isreal(value) && any(numel(value) == [1, n]) && all(value(:) >= 1) && ...
                 all(value(:) == round(value(:))))
                bad(sprintf('a positive integer or %d positive integers', n));
            end
            value = double(reshape(value, 1, []));
            if isscalar(value)
                value = repmat(value, 1, n);
            end
        case 'nonnegints'
            if ~(isnumeric(value) && isreal(value) && all(value(:) >= 0) && all(value(:) == round(value(:))))
                bad('nonnegative integers');
            end
            value = double(reshape(value, 1, []));
        case 'scalar'
            if ~(isnumeric(value) && isscalar(value) && isreal(value) && isfinite(value))
                bad('a finite real scalar');
            end
            value = double(value);
        case 'member'
            list = varargin{1};
            k = [];
            if isText
                k = find(strcmpi(char(value), list), 1);
            end
            if isempty(k)
                bad(['one of ', strjoin(cellfun(@(s) ['''', s, ''''], list, 'UniformOutput', false), ', ')]);
            end
            value = list{k};
        case 'logical'
            if ~((islogical(value) || isnumeric(value)) && isscalar(value) && any(value == [0, 1]))
                bad('true or false');
            end
            value = logical(value);
        case 'auto-or-posint'
            if isText && strcmpi(char(value), 'auto')
                value = 'auto';
            else
                value = hcTestCheck(value, 'posint', name);
            end
        case 'numeric'
            if ~((isnumeric(value) || islogical(value)) && isreal(value)) && ~isa(value, 'dlarray')
                bad('a real numeric array');
            end
        otherwise
            error('hessiancoreTest:invalidProperty', 'hcTestCheck: unknown kind %s', kind);
    end
end
