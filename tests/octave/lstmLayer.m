function layer = lstmLayer(numHiddenUnits, varargin)
    % Test double of lstmLayer(numHiddenUnits, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.LSTMLayer(), [{'NumHiddenUnits', numHiddenUnits}, varargin]);
end
