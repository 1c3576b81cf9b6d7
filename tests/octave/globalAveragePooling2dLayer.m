function layer = globalAveragePooling2dLayer(varargin)
    % Test double of globalAveragePooling2dLayer(Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.GlobalAveragePooling2DLayer(), varargin);
end
