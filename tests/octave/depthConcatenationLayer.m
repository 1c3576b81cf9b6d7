function layer = depthConcatenationLayer(numInputs, varargin)
    % Test double of depthConcatenationLayer(numInputs, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.DepthConcatenationLayer(numInputs), varargin);
end
