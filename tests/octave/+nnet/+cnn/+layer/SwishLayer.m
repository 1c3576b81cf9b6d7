classdef SwishLayer < nnet.cnn.layer.Layer
    % Test double of swishLayer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.swishlayer.html):
    % Y = X ./ (1 + exp(-X)), elementwise, no properties besides Name. Export only.
    properties (Constant)
        DefaultName = 'swish'
    end
end
