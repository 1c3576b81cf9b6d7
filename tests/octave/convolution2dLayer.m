function layer = convolution2dLayer(filterSize, numFilters, varargin)
    % Test double of convolution2dLayer(filterSize, numFilters, Name=Value...): 'Padding' is 'same',
    % a scalar, [v h] or [t b l r] (stored as PaddingMode/PaddingSize as MATLAB does).
    args = varargin;
    k = find(cellfun(@(a) ischar(a) && strcmpi(a, 'Padding'), args(1:2:end)), 1);
    pad = {};
    if ~isempty(k)
        value = args{2 * k};
        args(2 * k - 1:2 * k) = [];
        if ischar(value)
            pad = {'PaddingMode', value};
        elseif numel(value) == 1
            pad = {'PaddingSize', repmat(value, 1, 4)};
        elseif numel(value) == 2
            pad = {'PaddingSize', [value(1) value(1) value(2) value(2)]};
        else
            pad = {'PaddingSize', value(:)'};
        end
    end
    if numel(filterSize) == 1
        filterSize = [filterSize filterSize];
    end
    layer = hcTestSetProps(nnet.cnn.layer.Convolution2DLayer(), ...
                           [{'FilterSize', filterSize, 'NumFilters', numFilters}, pad, args]);
end
