classdef dlnetwork
    % Octave test double of MATLAB's dlnetwork (Deep Learning Toolbox), from the documentation
    % (https://www.mathworks.com/help/deeplearning/ref/dlnetwork.html, .../ref/dlnetwork.initialize.html,
    % .../ref/dlnetwork.addlayers.html, .../ref/dlnetwork.connectlayers.html):
    %   net = dlnetwork(layers) for a Layer array (in Octave [l1 l2 ...] gives a nnet.cnn.layer.LayerArray)
    %   connected in series; dlnetwork(layers, 'Initialize', false) leaves it uninitialized; net = dlnetwork
    %   is an empty network to fill with addLayers and connectLayers (DAGs: addition, concatenation).
    %   Unnamed layers get unique default names ('fc', 'fc_1', ...); names must be unique.
    %   Initialized is true only after initialization, which a network gets at construction when every
    %   network input is an input layer and Initialize is true, or from initialize(net) (initialize(net, X)
    %   with an example formatted dlarray for an input not connected to an input layer). Initialization
    %   infers sizes through the graph (InputSize, NumChannels 'auto' become numbers), checks learnables a
    %   layer was given against the sizes it needs, and fills empty ones (Glorot weights, zero biases, ones
    %   for scales and variances), single precision as MATLAB.
    %   Learnables and State are tables with variables Layer and Parameter (string arrays) and Value (a
    %   cell of dlarray; empty values while uninitialized). A network without state parameters has a 0x3
    %   State table (MATLAB Answers 2075086, "dlnetwork state is always a 0 table"); the types of its empty
    %   columns are not documented: the double uses 0x1 string, 0x1 string and 0x1 cell.
    %   Connections is a table with Source and Destination (cellstr; 'layer/in2' for a second input).
    %   InputNames / OutputNames are cellstr. predict/forward run the layers in order on formatted dlarray
    %   data with dlarray operations, so that they are traced inside dlfeval (the layers the double can
    %   evaluate: feature input, fc, flatten, relu, leakyrelu, tanh, sigmoid, softmax).
    properties
        Learnables
        State
    end
    properties (SetAccess = private)
        Layers
        Connections
        InputNames = {}
        OutputNames = {}
        Initialized = false
    end
    methods

        function net = dlnetwork(layers, varargin)
            net.Layers = nnet.cnn.layer.LayerArray({});
            net.Connections = table(cell(0, 1), cell(0, 1), 'VariableNames', {'Source', 'Destination'});
            net = net.rebuildTables();
            if nargin == 0
                return
            end
            initialize = true;
            if mod(numel(varargin), 2) ~= 0
                error('dlnetwork:nameValue', 'name-value arguments must come in pairs');
            end
            for i = 1:2:numel(varargin)
                if ~strcmpi(char(varargin{i}), 'Initialize')
                    error('dlnetwork:nameValue', 'dlnetwork has no option ''%s''', char(varargin{i}));
                end
                initialize = logical(varargin{i + 1});
            end
            net = addLayers(net, layers);
            if initialize && all(cellfun(@(l) l.NumInputs == 0, net.inputLayers()))
                net = net.initialize();
            end
        end

        function net = addLayers(net, layers)
            % Add layers (connected in series among themselves); the network becomes uninitialized.
            if ~isa(layers, 'nnet.cnn.layer.LayerArray')
                layers = nnet.cnn.layer.LayerArray({layers});
            end
            old = net.Layers.Items;
            items = dlnetwork.defaultNames([old, layers.Items]);
            new = items(numel(old) + 1:end);
            names = cellfun(@(l) l.Name, new, 'UniformOutput', false);
            src = [net.Connections.Source; reshape(names(1:end - 1), [], 1)];
            dst = net.Connections.Destination;
            for k = 2:numel(new)
                dst{end + 1, 1} = dlnetwork.port(new{k}, 1); %#ok<AGROW>
            end
            net.Connections = table(src, dst, 'VariableNames', {'Source', 'Destination'});
            net.Layers = nnet.cnn.layer.LayerArray(items);
            net.Initialized = false;
            net = net.rebuildTables();
        end

        function net = connectLayers(net, source, destination)
            % Connect the output of layer SOURCE to the input DESTINATION ('layer' or 'layer/in2').
            source = char(source);
            destination = char(destination);
            names = cellfun(@(l) l.Name, net.Layers.Items, 'UniformOutput', false);
            if ~any(strcmp(names, strtok(source, '/'))) || ~any(strcmp(names, strtok(destination, '/')))
                error('dlnetwork:connect', 'connectLayers: ''%s'' or ''%s'' is not a layer of the network', ...
                      source, destination);
            end
            if any(strcmp(net.Connections.Destination, destination))
                error('dlnetwork:connect', 'connectLayers: input ''%s'' is already connected', destination);
            end
            net.Connections = table([net.Connections.Source; {source}], ...
                                    [net.Connections.Destination; {destination}], ...
                                    'VariableNames', {'Source', 'Destination'});
            net.Initialized = false;
            net = net.rebuildTables();
        end

        function net = initialize(net, varargin)
            % Infer sizes through the graph and fill every empty learnable and state value.
            items = net.Layers.Items;
            names = cellfun(@(l) l.Name, items, 'UniformOutput', false);
            [sizes, fmts] = deal(cell(1, numel(items)));
            done = false(1, numel(items));
            examples = varargin;
            learn = net.Learnables;
            state = net.State;
            while ~all(done)
                progressed = false;
                for i = find(~done)
                    [inSizes, inFmts, ready, examples] = net.inputsOf(i, names, sizes, fmts, done, examples);
                    if ~ready
                        continue
                    end
                    layer = dlnetwork.settleAuto(items{i}, inSizes);
                    [layer, learn, state] = dlnetwork.fillParameters(layer, inSizes, inFmts, learn, state);
                    [sizes{i}, fmts{i}] = layer.outputSize(inSizes, inFmts);
                    items{i} = layer;
                    done(i) = true;
                    progressed = true;
                end
                if ~progressed
                    error('dlnetwork:initialize', ['initialize: layers %s have inputs that are not connected ', ...
                                                   'to an input layer; give example inputs, initialize(net, X)'], ...
                          strjoin(names(~done), ', '));
                end
            end
            net.Layers = nnet.cnn.layer.LayerArray(items);
            net.Initialized = false;  % the whole table is replaced: no row-by-row check
            net.Learnables = learn;
            net.State = state;
            net.Initialized = true;
        end

        function net = set.Learnables(net, tbl)
            if net.Initialized
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
    methods (Access = private)

        function layers = inputLayers(net)
            % The layers no connection feeds: the network's inputs.
            items = net.Layers.Items;
            fed = cellfun(@(d) strtok(d, '/'), net.Connections.Destination, 'UniformOutput', false);
            layers = items(~cellfun(@(l) any(strcmp(fed, l.Name)), items));
        end

        function [inSizes, inFmts, ready, examples] = inputsOf(net, i, names, sizes, fmts, done, examples)
            % Sizes and formats arriving at the inputs of layer i, once its sources are done.
            layer = net.Layers.Items{i};
            [inSizes, inFmts] = deal(cell(1, max(layer.NumInputs, 1)));
            ready = true;
            for k = 1:layer.NumInputs
                j = find(strcmp(net.Connections.Destination, dlnetwork.port(layer, k)), 1);
                if ~isempty(j)
                    s = find(strcmp(names, strtok(net.Connections.Source{j}, '/')), 1);
                    ready = done(s);
                    if ~ready
                        return
                    end
                    [inSizes{k}, inFmts{k}] = deal(sizes{s}, fmts{s});
                elseif isempty(examples)
                    ready = false;
                    return
                else
                    fmt = dims(examples{1});
                    sz = size(examples{1});
                    sz(end + 1:numel(fmt)) = 1;
                    [inSizes{k}, inFmts{k}] = deal(sz(fmt ~= 'B' & fmt ~= 'T'), fmt);
                    examples(1) = [];
                end
            end
        end

        function net = rebuildTables(net)
            % Learnables and State rows for every layer parameter, with the values the layers hold (empty
            % while uninitialized); InputNames and OutputNames from the connections.
            [lLayer, lParam, lValue, sLayer, sParam, sValue] = deal(cell(0, 1));
            items = net.Layers.Items;
            for i = 1:numel(items)
                layer = items{i};
                [lLayer, lParam, lValue] = dlnetwork.rows(layer, layer.learnableNames(), lLayer, lParam, lValue);
                [sLayer, sParam, sValue] = dlnetwork.rows(layer, layer.stateNames(), sLayer, sParam, sValue);
            end
            vn = {'VariableNames', {'Layer', 'Parameter', 'Value'}};
            initialized = net.Initialized;
            net.Initialized = false;
            net.Learnables = table(string(lLayer), string(lParam), lValue, vn{:});
            net.Initialized = initialized;
            net.State = table(string(sLayer), string(sParam), sValue, vn{:});
            names = cellfun(@(l) l.Name, items, 'UniformOutput', false);
            sources = cellfun(@(s) strtok(s, '/'), net.Connections.Source, 'UniformOutput', false);
            net.InputNames = cellfun(@(l) l.Name, net.inputLayers(), 'UniformOutput', false);
            net.OutputNames = names(~ismember(names, sources));
        end

    end
    methods (Static, Access = private)

        function [layerCol, paramCol, valueCol] = rows(layer, params, layerCol, paramCol, valueCol)
            for k = 1:numel(params)
                layerCol{end + 1, 1} = layer.Name; %#ok<AGROW>
                paramCol{end + 1, 1} = params{k}; %#ok<AGROW>
                value = layer.(params{k});
                if ~isempty(value)
                    value = dlarray(value);  % uninitialized: the empty value itself
                end
                valueCol{end + 1, 1} = value; %#ok<AGROW>
            end
        end

        function name = port(layer, k)
            % The Destination naming input k of a layer: 'name' for single-input layers, 'name/ink' else.
            if layer.NumInputs <= 1
                name = layer.Name;
            else
                name = sprintf('%s/%s', layer.Name, layer.InputNames{k});
            end
        end

        function layer = settleAuto(layer, inSizes)
            % 'auto' sizes become numbers at initialization, as MATLAB shows them afterwards.
            if isprop(layer, 'InputSize') && ischar(layer.InputSize)
                layer.InputSize = prod(inSizes{1});
            end
            if isprop(layer, 'NumChannels') && ischar(layer.NumChannels)
                layer.NumChannels = inSizes{1}(end);
            end
        end

        function [layer, learn, state] = fillParameters(layer, inSizes, inFmts, learn, state)
            % Check values the layer was given against the sizes it needs; fill empty ones.
            lnames = layer.learnableNames();
            params = [lnames, layer.stateNames()];
            shapes = layer.parameterShapes(inSizes, inFmts);
            for k = 1:numel(params)
                value = layer.(params{k});
                if isa(value, 'dlarray')
                    value = extractdata(value);
                end
                need = size(zeros(shapes{k}));
                if isempty(value)
                    value = layer.initialValue(params{k}, shapes{k}, inSizes);
                elseif ~isequal(size(value), need)
                    error('dlnetwork:initialize', 'layer ''%s'': %s has size [%s]; the network needs [%s]', ...
                          layer.Name, params{k}, num2str(size(value)), num2str(need));
                end
                layer.(params{k}) = value;
                if k <= numel(lnames)
                    learn = dlnetwork.setValue(learn, layer.Name, params{k}, value);
                else
                    state = dlnetwork.setValue(state, layer.Name, params{k}, value);
                end
            end
        end

        function tbl = setValue(tbl, layerName, param, value)
            row = find(strcmp(tbl.Layer, layerName) & strcmp(tbl.Parameter, param), 1);
            tbl.Value{row} = dlarray(value);
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
