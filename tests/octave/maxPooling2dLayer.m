function layer = maxPooling2dLayer(poolSize, varargin)
    % Test double of maxPooling2dLayer(poolSize, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.MaxPooling2DLayer(), [{'PoolSize', poolSize}, hcTestPadding(varargin)]);
end
