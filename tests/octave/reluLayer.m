function layer = reluLayer(varargin)
    % Test double of reluLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.ReLULayer(), varargin);
end
