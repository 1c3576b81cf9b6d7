function layer = hcTestSetProps(layer, args)
    % Apply 'Name', value pairs to a test-double layer, as the layer creation functions do.
    if mod(numel(args), 2) ~= 0
        error('hessiancoreTest:nameValue', 'name-value arguments must come in pairs');
    end
    for i = 1:2:numel(args)
        name = char(args{i});
        if ~isprop(layer, name)
            error('hessiancoreTest:nameValue', '%s has no property ''%s''', class(layer), name);
        end
        layer.(name) = args{i + 1};
    end
end
