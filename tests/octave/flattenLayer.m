function layer = flattenLayer(varargin)
    % Test double of flattenLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.FlattenLayer(), varargin);
end
