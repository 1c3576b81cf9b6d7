function layer = averagePooling2dLayer(poolSize, varargin)
    % Test double of averagePooling2dLayer(poolSize, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.AveragePooling2DLayer(), [{'PoolSize', poolSize}, hcTestPadding(varargin)]);
end
