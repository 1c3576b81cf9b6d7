classdef table
    % Octave test double of MATLAB's table (https://www.mathworks.com/help/matlab/ref/table.html), limited
    % to what dlnetwork's Learnables/State/Connections tables need: T = table(var1, ..., 'VariableNames',
    % names) with columns of equal height (cell, string or numeric), T.Name (the column), T.Name = column,
    % T.Name{i}, T.Name{i} = x, T.Properties.VariableNames, height(T), width(T), size(T), isempty(T)
    % (true with no rows or no variables). dlnetwork's Layer and Parameter columns are string arrays, as in
    % MATLAB (the string double); any other indexing is an error, so code that relies on more fails here.
    properties (Access = private)
        Names = {}
        Columns = {}
    end
    methods

        function obj = table(varargin)
            names = {};
            k = find(cellfun(@(a) ischar(a) && strcmp(a, 'VariableNames'), varargin), 1);
            if ~isempty(k)
                names = varargin{k + 1};
                varargin(k:k + 1) = [];
            end
            if isempty(names)
                names = arrayfun(@(i) sprintf('Var%d', i), 1:numel(varargin), 'UniformOutput', false);
            end
            if numel(names) ~= numel(varargin)
                error('table:names', 'VariableNames has %d names for %d variables', numel(names), numel(varargin));
            end
            heights = cellfun(@(c) size(c, 1), varargin);
            if any(heights ~= heights(1))
                error('table:height', 'all table variables must have the same number of rows');
            end
            obj.Names = names(:)';
            obj.Columns = varargin(:)';
        end

        function h = height(obj)
            if isempty(obj.Columns)
                h = 0;
            else
                h = size(obj.Columns{1}, 1);
            end
        end

        function w = width(obj)
            w = numel(obj.Columns);
        end

        function varargout = size(obj, d)
            sz = [height(obj), width(obj)];
            if nargin > 1
                varargout = {sz(d)};
            elseif nargout <= 1
                varargout = {sz};
            else
                varargout = num2cell(sz);
            end
        end

        function n = numel(obj, varargin)
            n = 1;
        end

        function tf = isempty(obj)
            tf = height(obj) == 0 || width(obj) == 0;
        end

        function out = subsref(obj, s)
            if ~strcmp(s(1).type, '.')
                error('table:indexing', 'the table double only supports T.Name indexing');
            end
            if strcmp(s(1).subs, 'Properties')
                out = struct('VariableNames', {obj.Names});
            else
                out = obj.Columns{column(obj, s(1).subs)};
            end
            if numel(s) > 1
                out = subsref(out, s(2:end));
            end
        end

        function obj = subsasgn(obj, s, value)
            if ~strcmp(s(1).type, '.')
                error('table:indexing', 'the table double only supports T.Name assignment');
            end
            k = column(obj, s(1).subs);
            if numel(s) > 1
                value = subsasgn(obj.Columns{k}, s(2:end), value);
            end
            if size(value, 1) ~= height(obj)
                error('table:height', 'To assign to a variable, the right-hand side must have %d rows.', height(obj));
            end
            obj.Columns{k} = value;
        end

    end
    methods (Access = private)

        function k = column(obj, name)
            k = find(strcmp(obj.Names, name), 1);
            if isempty(k)
                error('table:unknownVariable', 'Unrecognized table variable name ''%s''.', name);
            end
        end

    end
end
