function [sizes, counts] = hcLearnableSizes(net)
    % HCLEARNABLESIZES  Size and number of elements of each row of NET.Learnables (internal).
    %   [SIZES, COUNTS] = HCLEARNABLESIZES(NET): SIZES is a 1xN cell of size vectors, COUNTS 1xN.
    values = net.Learnables.Value;
    sizes = cell(1, numel(values));
    counts = zeros(1, numel(values));
    for i = 1:numel(values)
        sizes{i} = size(values{i});
        counts(i) = prod(sizes{i});
    end
end
