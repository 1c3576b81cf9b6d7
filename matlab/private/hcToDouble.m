function x = hcToDouble(x)
    % HCTODOUBLE  Plain double array from a dlarray, gpuArray, single or integer array (internal).
    %   X = HCTODOUBLE(X) keeps the size of X.
    if isa(x, 'dlarray')
        x = extractdata(x);
    end
    if isa(x, 'gpuArray')
        x = gather(x);
    end
    x = double(x);
end
