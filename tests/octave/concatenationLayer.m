function layer = concatenationLayer(dim, numInputs, varargin)
    % Test double of concatenationLayer(dim, numInputs, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.ConcatenationLayer(dim, numInputs), varargin);
end
