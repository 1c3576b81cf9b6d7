function layer = imageInputLayer(inputSize, varargin)
    % Test double of imageInputLayer(inputSize, Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.ImageInputLayer(), [{'InputSize', inputSize}, varargin]);
end
