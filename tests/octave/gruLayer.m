function layer = gruLayer(numHiddenUnits, varargin)
    % Test double of gruLayer(numHiddenUnits, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.GRULayer(), [{'NumHiddenUnits', numHiddenUnits}, varargin]);
end
