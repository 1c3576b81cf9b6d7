function loss = hcDefaultLoss(net)
    % HCDEFAULTLOSS  The loss used when 'Loss' is not given: 'crossentropy' after a softmaxLayer, else 'mse' (internal).
    %   LOSS = HCDEFAULTLOSS(NET) looks at the class of NET's output layer (the layer named by
    %   NET.OutputNames{1}, or the last layer). The same rule as the Python bridge's
    %   bridge.losses.default_loss, which the Python backend applies; a test checks that the two agree.
    layers = net.Layers;
    out = layers(end);
    names = cellstr(net.OutputNames);
    if ~isempty(names)
        for i = 1:numel(layers)
            if strcmp(char(layers(i).Name), names{1})
                out = layers(i);
            end
        end
    end
    parts = strsplit(class(out), '.');
    if strcmp(parts{end}, 'SoftmaxLayer')
        loss = 'crossentropy';
    else
        loss = 'mse';
    end
end
