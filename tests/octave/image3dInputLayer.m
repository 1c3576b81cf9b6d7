function layer = image3dInputLayer(inputSize, varargin)
    % Test double of image3dInputLayer(inputSize, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.Image3DInputLayer(), [{'InputSize', inputSize}, varargin]);
end
