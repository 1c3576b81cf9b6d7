function layer = layerNormalizationLayer(varargin)
    % Test double of layerNormalizationLayer(Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.LayerNormalizationLayer(), varargin);
end
