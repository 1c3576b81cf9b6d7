classdef dlnetwork
    % Octave test double of MATLAB's dlnetwork (Deep Learning Toolbox), from the documentation:
    %   net = dlnetwork(layers) for a series of layers (a Layer array; in Octave [l1 l2 ...] gives a
    %   nnet.cnn.layer.LayerArray). Unnamed layers get unique default names ('fc', 'fc_1', ...), input
    %   sizes are inferred, learnables are initialized (Glorot, single) unless given, and
    %   Learnables/State are tables with variables Layer, Parameter, Value (Value a cell of dlarray).
    %   Connections is a table with Source and Destination. predict/forward run the layers in order on
    %   formatted dlarray data with dlarray operations, so that they are traced inside dlfeval (the layers
    %   the double can evaluate: feature input, fc, flatten, relu, leakyrelu, tanh, sigmoid, softmax).
    properties
        Learnables
        State
    end
    properties (SetAccess = private)
        Layers
        Connections
        InputNames = {}
        OutputNames = {}
        Initialized = true
    end
    methods

        function net = dlnetwork(layers)
            if ~isa(layers, 'nnet.cnn.layer.LayerArray')
                layers = nnet.cnn.layer.LayerArray({layers});
            end
            items = layers.Items;
            items = dlnetwork.defaultNames(items);
            L = numel(items);
            [lLayer, lParam, lValue, sLayer, sParam, sValue] = deal({});
            sz = [];
            fmt = '';
            for i = 1:L
                layer = items{i};
                if isprop(layer, 'InputSize') && ischar(layer.InputSize)
                    layer.InputSize = prod(sz);
                end
                if isprop(layer, 'NumChannels') && ischar(layer.NumChannels)
                    layer.NumChannels = sz(end);
                end
                [names, values, snames, svalues] = layer.initLearnables(sz);
                for j = 1:numel(names)
                    layer.(names{j}) = values{j};
                end
                for j = 1:numel(snames)
                    layer.(snames{j}) = svalues{j};
                end
                lLayer = [lLayer; repmat({layer.Name}, numel(names), 1)]; %#ok<AGROW>
                lParam = [lParam; names(:)]; %#ok<AGROW>
                lValue = [lValue; dlnetwork.toDlarray(values)]; %#ok<AGROW>
                sLayer = [sLayer; repmat({layer.Name}, numel(snames), 1)]; %#ok<AGROW>
                sParam = [sParam; snames(:)]; %#ok<AGROW>
                sValue = [sValue; dlnetwork.toDlarray(svalues)]; %#ok<AGROW>
                [sz, fmt] = layer.outputSize(sz, fmt);
                items{i} = layer;
            end
            vn = {'VariableNames', {'Layer', 'Parameter', 'Value'}};
            net.Learnables = table(reshape(lLayer, [], 1), reshape(lParam, [], 1), reshape(lValue, [], 1), vn{:});
            net.State = table(reshape(sLayer, [], 1), reshape(sParam, [], 1), reshape(sValue, [], 1), vn{:});
            names = cellfun(@(l) l.Name, items, 'UniformOutput', false);
            net.Connections = table(reshape(names(1:end - 1), [], 1), reshape(names(2:end), [], 1), ...
                                    'VariableNames', {'Source', 'Destination'});
            net.Layers = nnet.cnn.layer.LayerArray(items);
            net.InputNames = names(1);
            net.OutputNames = names(end);
        end

        function net = set.Learnables(net, tbl)
            if ~isempty(net.Learnables)
                old = net.Learnables;
                same = isa(tbl, 'table') && height(tbl) == height(old) && isequal(tbl.Layer, old.Layer) && ...
                       isequal(tbl.Parameter, old.Parameter);
                if ~same
                    error('dlnetwork:learnables', 'Learnables must be a table with the same Layer and Parameter rows');
                end
                for i = 1:height(tbl)
                    if ~isequal(size(tbl.Value{i}), size(old.Value{i}))
                        error('dlnetwork:learnables', 'Learnables row %d: size [%s] does not match [%s]', i, ...
                              num2str(size(tbl.Value{i})), num2str(size(old.Value{i})));
                    end
                end
            end
            net.Learnables = tbl;
        end

        function Y = predict(net, X)
            % The layers in order on a formatted dlarray, with the learnables as they are (dlarray
            % values; traced inside dlfeval, so that dlgradient differentiates through the network).
            if ~isa(X, 'dlarray') || isempty(dims(X))
                error('dlnetwork:predict', 'the double predicts on formatted dlarray input only');
            end
            Y = X;
            tbl = net.Learnables;
            layerOf = tbl.Layer;
            values = tbl.Value;
            params = tbl.Parameter;
            for i = 1:numel(net.Layers)
                layer = net.Layers(i);
                p = struct();
                rows = find(strcmp(layerOf, layer.Name));
                for r = rows(:)'
                    p.(params{r}) = values{r};
                end
                Y = layer.predictLayer(Y, p);
            end
        end

        function [Y, state] = forward(net, X)
            % No dropout or batch normalization in the layers the double evaluates: same as predict.
            Y = predict(net, X);
            state = net.State;
        end

    end
    methods (Static, Access = private)

        function out = toDlarray(values)
            % A loop, not cellfun(@dlarray, ...): Octave 7 mishandles later constructor calls after that.
            out = cell(numel(values), 1);
            for k = 1:numel(values)
                out{k} = dlarray(values{k});
            end
        end

        function items = defaultNames(items)
            used = cellfun(@(l) l.Name, items, 'UniformOutput', false);
            for i = 1:numel(items)
                if isempty(items{i}.Name)
                    base = items{i}.DefaultName;
                    name = base;
                    k = 0;
                    while any(strcmp(used, name))
                        k = k + 1;
                        name = sprintf('%s_%d', base, k);
                    end
                    items{i}.Name = name;
                    used{i} = name;
                end
            end
            if numel(unique(used)) ~= numel(used)
                error('dlnetwork:names', 'layer names must be unique');
            end
        end

    end
end
