function layer = fullyConnectedLayer(outputSize, varargin)
    % Test double of fullyConnectedLayer(outputSize, Name=Value...), e.g. 'Weights', W, 'Bias', b.
    layer = hcTestSetProps(nnet.cnn.layer.FullyConnectedLayer(), [{'OutputSize', outputSize}, varargin]);
end
