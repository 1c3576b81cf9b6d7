function spec = dlnetworkToSpec(net)
    % DLNETWORKTOSPEC  Describe a dlnetwork as the plain struct the hessiancore Python bridge reads.
    %   SPEC = DLNETWORKTOSPEC(NET) returns a scalar struct (format 'hessiancore.network/1'):
    %     Format       'hessiancore.network/1'
    %     Layers       1xL cell of scalar structs: Name, Class (class(layer)) and the properties the
    %                  translator of that class needs, under their MATLAB names, as plain values
    %     Connections  struct with Source and Destination, 1xK cellstr ('layer/in2' style)
    %     InputNames, OutputNames   1xI and 1xO cellstr
    %     Learnables   struct with Layer and Parameter (1xN cellstr) and Value (1xN cell of double
    %                  arrays in their MATLAB shape), rows in NET.Learnables order
    %     State        the same for NET.State (batch-norm statistics, recurrent states)
    %   Only plain values (double, char, cellstr, cell, struct) are used, so SPEC crosses to Python
    %   through py., the MATLAB Engine, Octave and .mat files alike. Learnables leave the GPU and become
    %   double. Every Hessian row, vector and eigenvector that comes back follows the row order of
    %   NET.Learnables, each Value(:) column-major.
    %
    %   Input normalization given as a function handle cannot cross: Normalization is then the text
    %   'function_handle: <func2str>', which Python refuses by name (the wrappers apply the handle to X in
    %   MATLAB before exporting). A property of a supported layer that cannot cross is sent as a
    %   description, never dropped. The empty State of a stateless network becomes a table with no rows.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) reluLayer fullyConnectedLayer(2)]);
    %     spec = dlnetworkToSpec(net);
    %     spec.Learnables.Parameter      % {'Weights', 'Bias', 'Weights', 'Bias'}
    %
    %   See also updateLearnables, dlhessian.
    if ~isobject(net) || ~isprop(net, 'Learnables') || ~isprop(net, 'Layers')
        error('hessiancore:invalidInput', 'dlnetworkToSpec: NET must be a dlnetwork, got a %s', class(net));
    end
    if isprop(net, 'Initialized') && ~net.Initialized
        error('hessiancore:invalidInput', ['dlnetworkToSpec: the network is not initialized; call ', ...
                                           'net = initialize(net) (or dlnetwork(layers) with an input layer) first']);
    end
    spec = struct();
    spec.Format = 'hessiancore.network/1';
    spec.Layers = exportLayers(net);
    spec.Connections = exportConnections(net);
    spec.InputNames = reshape(cellstr(net.InputNames), 1, []);
    spec.OutputNames = reshape(cellstr(net.OutputNames), 1, []);
    spec.Learnables = exportTable(net.Learnables);
    if isprop(net, 'State')
        spec.State = exportTable(net.State);
    else
        spec.State = struct('Layer', {cell(1, 0)}, 'Parameter', {cell(1, 0)}, 'Value', {cell(1, 0)});
    end
end

function out = exportLayers(net)
    layers = net.Layers;
    paramNames = textColumn(net.Learnables.Parameter);
    if isprop(net, 'State')
        paramNames = [paramNames, textColumn(net.State.Parameter)];
    end
    out = cell(1, numel(layers));
    for i = 1:numel(layers)
        layer = layers(i);
        s = struct('Name', char(layer.Name), 'Class', class(layer));
        [names, known] = hcLayerProperties(class(layer));
        if ~known
            names = properties(layer);
        end
        for j = 1:numel(names)
            name = names{j};
            bookkeeping = ~isempty(regexp(name, '(LearnRateFactor|L2Factor|Initializer)$', 'once'));
            skip = any(strcmp(name, [{'Name'}, paramNames])) || ~isprop(layer, name) || (~known && bookkeeping);
            if skip
                continue
            end
            [value, ok] = hcPlainValue(layer.(name));
            if ok
                s.(name) = value;
            elseif known
                % A property the translator reads never silently falls back to its default: a function
                % handle (input Normalization, applied in MATLAB by the wrappers) or any other value that
                % cannot cross is sent as a description that Python refuses by name.
                s.(name) = describeValue(layer.(name));
            end
        end
        out{i} = s;
    end
end

function out = exportConnections(net)
    out = struct('Source', {cell(1, 0)}, 'Destination', {cell(1, 0)});
    if isprop(net, 'Connections') && height(net.Connections) > 0
        out.Source = reshape(cellstr(net.Connections.Source), 1, []);
        out.Destination = reshape(cellstr(net.Connections.Destination), 1, []);
    end
end

function out = exportTable(tbl)
    % Learnables or State: Layer and Parameter are string arrays in MATLAB; the empty State of a stateless
    % network is a 0x3 table whose column types MathWorks does not document, so any empty column is read
    % as no rows.
    out = struct('Layer', {textColumn(tbl.Layer)}, 'Parameter', {textColumn(tbl.Parameter)}, ...
                 'Value', {cell(1, 0)});
    if isempty(out.Layer)
        return
    end
    values = tbl.Value;
    out.Value = cell(1, numel(values));
    for i = 1:numel(values)
        out.Value{i} = hcToDouble(values{i});
    end
end

function c = textColumn(column)
    % A table's text column (string array, cellstr or char) as a 1xN cellstr; 1x0 when empty.
    if isempty(column)
        c = cell(1, 0);
    else
        c = reshape(cellstr(column), 1, []);
    end
end

function text = describeValue(value)
    if isa(value, 'function_handle')
        text = ['function_handle: ', func2str(value)];
    else
        text = sprintf('unsupported value: a %s', class(value));
    end
end
