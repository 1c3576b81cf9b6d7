function layer = featureInputLayer(numFeatures, varargin)
    % Test double of featureInputLayer(numFeatures, Name=Value...).
    layer = hcTestSetProps(nnet.cnn.layer.FeatureInputLayer(), [{'InputSize', numFeatures}, varargin]);
end
