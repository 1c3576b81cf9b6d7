function args = hcTestPadding(args)
    % The 'Padding' name-value argument of convolution and pooling layer creation functions, stored as
    % the layer does (convolution2dLayer page): 'same' -> PaddingMode 'same'; a scalar p -> PaddingSize
    % [p p p p]; [v h] -> [v v h h]; [t b l r] as given (PaddingMode 'manual').
    k = find(cellfun(@(a) (ischar(a) || isstring(a)) && strcmpi(char(a), 'Padding'), args(1:2:end)), 1);
    if isempty(k)
        return
    end
    value = args{2 * k};
    args(2 * k - 1:2 * k) = [];
    if ischar(value) || isstring(value)
        args = [args, {'PaddingMode', value}];
        return
    end
    value = hcTestCheck(value, 'nonnegints', 'Padding');
    switch numel(value)
        case 1
            value = repmat(value, 1, 4);
        case 2
            value = [value(1) value(1) value(2) value(2)];
        case 4
        otherwise
            error('hessiancoreTest:invalidProperty', 'Padding must be ''same'', a scalar, [v h] or [t b l r]');
    end
    args = [args, {'PaddingSize', value}];
end
