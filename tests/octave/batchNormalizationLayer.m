function layer = batchNormalizationLayer(varargin)
    % Test double of batchNormalizationLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.BatchNormalizationLayer(), varargin);
end
