function layer = sigmoidLayer(varargin)
    % Test double of sigmoidLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.SigmoidLayer(), varargin);
end
