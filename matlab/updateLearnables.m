function net = updateLearnables(net, values)
    % UPDATELEARNABLES  Write new learnable values into a dlnetwork.
    %   NET = UPDATELEARNABLES(NET, VALUES) returns NET with its Learnables replaced. VALUES is one of
    %     - a 1xN (or Nx1) cell array in the row order of NET.Learnables; element i has the number of
    %       elements of learnable i and is reshaped (column-major) to its size,
    %     - a numeric vector with all P learnable elements (rows in order, each Value(:) column-major),
    %     - a table shaped like NET.Learnables.
    %   Each new value keeps the storage of the old one (dlarray, single or double, gpuArray), so a
    %   single-precision network stays single. NET itself (a value object) is not changed: use the output.
    %   The Python bridge calls this function, through the Engine, to import results.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(2)]);
    %     spec = dlnetworkToSpec(net);
    %     net2 = updateLearnables(net, spec.Learnables.Value);    % same values back
    %
    %   See also dlnetworkToSpec, dlnewtonUpdate.
    if ~isobject(net) || ~isprop(net, 'Learnables')
        error('hessiancore:invalidInput', 'updateLearnables: NET must be a dlnetwork, got a %s', class(net));
    end
    [sizes, counts] = hcLearnableSizes(net);
    N = numel(counts);
    if iscell(values)
        if numel(values) ~= N
            error('hessiancore:invalidInput', ...
                  'updateLearnables: VALUES has %d elements; NET.Learnables has %d rows', numel(values), N);
        end
        parts = cell(N, 1);
        for i = 1:N
            x = hcToDouble(values{i});
            if numel(x) ~= counts(i)
                error('hessiancore:invalidInput', ['updateLearnables: value %d has %d elements; ', ...
                                                   'learnable %d has size [%s] (%d elements)'], ...
                      i, numel(x), i, num2str(sizes{i}), counts(i));
            end
            parts{i} = x(:);
        end
        flat = vertcat(parts{:});
    else
        flat = hcFromLearnables(net, values, 'VALUES');
        if size(flat, 2) ~= 1
            error('hessiancore:invalidInput', 'updateLearnables: VALUES must be one vector, got %d columns', ...
                  size(flat, 2));
        end
    end
    if any(~isfinite(flat))
        error('hessiancore:nonFinite', 'updateLearnables: the new values contain NaN or Inf; NET is unchanged');
    end
    old = net.Learnables.Value;
    new = cell(N, 1);
    offset = 0;
    for i = 1:N
        new{i} = hcLike(flat(offset + 1:offset + counts(i)), old{i});
        offset = offset + counts(i);
    end
    net = hcWithValues(net, new);
end
