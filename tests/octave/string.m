classdef string
    % Octave test double of MATLAB's string array (GNU Octave 7 has no string class; its isstring is
    % always false). From the documentation (https://www.mathworks.com/help/matlab/ref/string.html,
    % .../ref/isstring.html, .../ref/cellstr.html, .../ref/char.html, .../ref/strcmp.html):
    %   s = string(x) for a char row vector (a scalar), a cellstr (same size) or a string; s = string()
    %   is "" (a 1x1 string with no characters). isstring(s) is true; char(s) of a scalar is its text
    %   (a string array has no one char: the double refuses where MATLAB would pad rows); cellstr(s) has
    %   the size of s; s(i) indexes elements and s{i} is the char of element i; strcmp/strcmpi compare
    %   element-wise with char, cellstr and strings; size, numel, isempty, isscalar, ==, ', .', reshape;
    %   [a b] and [a; b] concatenate.
    % Saving: MATLAB saves a string to a -v7 .mat file as an object that scipy.io.loadmat cannot read
    % (scipy issues 11818, 12408: it loads as an opaque MatlabOpaque). The double holds a function
    % handle, which Octave cannot write to a .mat file, so saving anything that still contains a string
    % fails here: code that would send a string to Python fails in the tests as it would in Python.
    properties (Access = private)
        % Not empty by default: Octave 7 consults the overloaded numel while the constructor assigns.
        Text = {''}
        Unsaveable = []
    end
    methods

        function obj = string(x)
            obj.Unsaveable = @() error('string:save', 'a string cannot be saved for scipy.io.loadmat');
            if nargin == 0
                return
            end
            if isa(x, 'string')
                obj.Text = x.Text;
            elseif ischar(x) && (isempty(x) || isrow(x))
                obj.Text = {x};
            elseif iscellstr(x)
                obj.Text = x;
            elseif isnumeric(x) || islogical(x)
                obj.Text = arrayfun(@(v) num2str(v), x, 'UniformOutput', false);
            else
                error('string:invalidInput', 'string: cannot convert a %s', class(x));
            end
        end

        function tf = isstring(~)
            tf = true;
        end

        function c = char(obj)
            if numel(obj.Text) ~= 1
                error('string:char', 'the string double converts only a scalar to char');
            end
            c = obj.Text{1};
        end

        function c = cellstr(obj)
            c = obj.Text;
        end

        function varargout = size(obj, varargin)
            [varargout{1:max(nargout, 1)}] = size(obj.Text, varargin{:});
        end

        function n = numel(obj, varargin)
            n = numel(obj.Text);
        end

        function tf = isempty(obj)
            tf = isempty(obj.Text);
        end

        function tf = isscalar(obj)
            tf = numel(obj.Text) == 1;
        end

        function n = ndims(obj)
            n = ndims(obj.Text);
        end

        function tf = strcmp(a, b)
            tf = compare(a, b, @strcmp);
        end

        function tf = strcmpi(a, b)
            tf = compare(a, b, @strcmpi);
        end

        function tf = eq(a, b)
            tf = compare(a, b, @strcmp);
        end

        function tf = isequal(a, b)
            tf = isa(a, 'string') && isa(b, 'string') && isequal(size(a), size(b)) && all(strcmp(a, b));
        end

        function out = horzcat(varargin)
            parts = cellfun(@(p) cellstr(string(p)), varargin, 'UniformOutput', false);
            out = string([parts{:}]);
        end

        function out = vertcat(varargin)
            parts = cellfun(@(p) cellstr(string(p)), varargin, 'UniformOutput', false);
            out = string(vertcat(parts{:}));
        end

        function out = transpose(obj)
            out = string(obj.Text.');
        end

        function out = ctranspose(obj)
            out = string(obj.Text');
        end

        function out = reshape(obj, varargin)
            out = string(reshape(obj.Text, varargin{:}));
        end

        function out = subsref(obj, s)
            switch s(1).type
                case '()'
                    out = string(obj.Text(s(1).subs{:}));
                case '{}'
                    % str{k} is the character vector of element k (string array page, "Access Characters").
                    out = obj.Text{s(1).subs{:}};
                otherwise
                    error('string:indexing', 'the string double supports s(i) and s{i} indexing only');
            end
            if numel(s) > 1
                out = subsref(out, s(2:end));
            end
        end

        function disp(obj)
            fprintf('  string: %s\n', strjoin(cellfun(@(t) ['"', t, '"'], obj.Text(:)', 'UniformOutput', false), ' '));
        end

    end
end

function tf = compare(a, b, fcn)
    a = asCell(a);
    b = asCell(b);
    if numel(a) == 1
        tf = cellfun(@(t) fcn(a{1}, t), b);
    elseif numel(b) == 1
        tf = cellfun(@(t) fcn(t, b{1}), a);
    elseif isequal(size(a), size(b))
        tf = cellfun(fcn, a, b);
    else
        error('string:size', 'strcmp: the string arrays have different sizes');
    end
end

function c = asCell(x)
    if isa(x, 'string')
        c = cellstr(x);
    elseif ischar(x)
        c = {x};
    elseif iscell(x)
        c = x;
    else
        c = {x};
    end
end
