function layer = sequenceInputLayer(inputSize, varargin)
    % Test double of sequenceInputLayer(inputSize, Name=Value).
    layer = hcTestSetProps(nnet.cnn.layer.SequenceInputLayer(), [{'InputSize', inputSize}, varargin]);
end
