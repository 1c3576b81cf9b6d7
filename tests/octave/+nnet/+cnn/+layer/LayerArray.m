classdef LayerArray
    % Octave stand-in for MATLAB's heterogeneous Layer array (see nnet.cnn.layer.Layer).
    properties (SetAccess = private)
        % Not empty by default: Octave 7 consults the overloaded numel while the constructor assigns.
        Items = {[]}
    end
    methods (Static)

        function out = concat(parts)
            items = {};
            for i = 1:numel(parts)
                if isa(parts{i}, 'nnet.cnn.layer.LayerArray')
                    items = [items, parts{i}.Items]; %#ok<AGROW>
                elseif isempty(parts{i})
                    continue
                else
                    items{end + 1} = parts{i}; %#ok<AGROW>
                end
            end
            out = nnet.cnn.layer.LayerArray(items);
        end

    end
    methods

        function obj = LayerArray(items)
            obj.Items = items(:)';
        end

        function n = numel(obj, varargin)
            n = numel(obj.Items);
        end

        function n = length(obj)
            n = numel(obj.Items);
        end

        function sz = size(obj, d)
            sz = [numel(obj.Items), 1];
            if nargin > 1
                sz = sz(d);
            end
        end

        function out = horzcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function out = vertcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function out = subsref(obj, s)
            switch s(1).type
                case '()'
                    idx = s(1).subs{1};
                    if ischar(idx) && strcmp(idx, ':')
                        idx = 1:numel(obj.Items);
                    end
                    if numel(idx) == 1
                        out = obj.Items{idx};
                    else
                        out = nnet.cnn.layer.LayerArray(obj.Items(idx));
                    end
                case '.'
                    out = builtin('subsref', obj, s(1));
                otherwise
                    error('LayerArray:indexing', 'use layers(i) to index a Layer array');
            end
            if numel(s) > 1
                out = subsref(out, s(2:end));
            end
        end

    end
end
