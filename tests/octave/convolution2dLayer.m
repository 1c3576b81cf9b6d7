function layer = convolution2dLayer(filterSize, numFilters, varargin)
    % Test double of convolution2dLayer(filterSize, numFilters, Name=Value): 'Padding' is 'same', a scalar,
    % [v h] or [t b l r] (stored as PaddingMode/PaddingSize as MATLAB does).
    layer = hcTestSetProps(nnet.cnn.layer.Convolution2DLayer(), ...
                           [{'FilterSize', filterSize, 'NumFilters', numFilters}, hcTestPadding(varargin)]);
end
