function tbl = hcToLearnables(net, M, trailing)
    % HCTOLEARNABLES  A P x K matrix in parameter order as a table shaped like NET.Learnables (internal).
    %   TBL = HCTOLEARNABLES(NET, M, TRAILING) copies NET.Learnables and sets row i's Value to the rows of
    %   M that belong to learnable i, as a dlarray: with K = 1 and TRAILING false it has the learnable's
    %   size (like dlgradient's output); otherwise size [size(learnable), K], column k for column k of M.
    %   Built by copying NET.Learnables, so no table function is called.
    [sizes, counts] = hcLearnableSizes(net);
    if size(M, 1) ~= sum(counts)
        error('hessiancore:invalidInput', 'result has %d rows; NET has %d learnable parameters', size(M, 1), ...
              sum(counts));
    end
    K = size(M, 2);
    values = cell(numel(counts), 1);
    offset = 0;
    for i = 1:numel(counts)
        block = M(offset + 1:offset + counts(i), :);
        offset = offset + counts(i);
        if K == 1 && ~trailing
            values{i} = dlarray(reshape(block, sizes{i}));
        else
            values{i} = dlarray(reshape(block, [sizes{i}, K]));
        end
    end
    tbl = net.Learnables;
    tbl.Value = values;
end
