function layer = globalMaxPooling2dLayer(varargin)
    % Test double of globalMaxPooling2dLayer(Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.GlobalMaxPooling2DLayer(), varargin);
end
