function layer = geluLayer(varargin)
    % Test double of geluLayer(Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.GELULayer(), varargin);
end
