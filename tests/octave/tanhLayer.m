function layer = tanhLayer(varargin)
    % Test double of tanhLayer(Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.TanhLayer(), varargin);
end
