function layer = softmaxLayer(varargin)
    % Test double of softmaxLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.SoftmaxLayer(), varargin);
end
