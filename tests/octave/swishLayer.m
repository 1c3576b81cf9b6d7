function layer = swishLayer(varargin)
    % Test double of swishLayer(Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.SwishLayer(), varargin);
end
