function layer = additionLayer(numInputs, varargin)
    % Test double of additionLayer(numInputs, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.AdditionLayer(numInputs), varargin);
end
