function y = hcLike(x, old)
    % HCLIKE  Values X (double) with the size and storage of OLD: dlarray, gpuArray, single or double (internal).
    %   Used when new learnable values are written back into a network, so that its Learnables keep their
    %   type (a single-precision network stays single, a GPU network stays on the GPU).
    x = reshape(x, size(old));
    if isa(old, 'dlarray')
        y = dlarray(hcLike(x, extractdata(old)));
    elseif isa(old, 'gpuArray')
        y = gpuArray(cast(x, classUnderlying(old)));
    else
        y = cast(x, class(old));
    end
end
