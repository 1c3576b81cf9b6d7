function v = hcFromLearnables(net, v, what)
    % HCFROMLEARNABLES  A vector in the parameter order of NET as a P x K double matrix (internal).
    %   V = HCFROMLEARNABLES(NET, V, WHAT) accepts a numeric (or dlarray) vector with P elements, a P x K
    %   matrix, or a table shaped like NET.Learnables (each Value with that learnable's size). P is the
    %   total number of learnable elements; order: Learnables rows, each Value(:) column-major. WHAT names
    %   the argument in error messages.
    [~, counts] = hcLearnableSizes(net);
    P = sum(counts);
    if isa(v, 'table') || (isobject(v) && ~isa(v, 'dlarray') && isprop(v, 'Value'))
        values = v.Value;
        if numel(values) ~= numel(counts)
            error('hessiancore:invalidInput', '%s has %d rows; NET.Learnables has %d', what, numel(values), ...
                  numel(counts));
        end
        parts = cell(numel(values), 1);
        for i = 1:numel(values)
            x = hcToDouble(values{i});
            if numel(x) ~= counts(i)
                error('hessiancore:invalidInput', '%s row %d has %d elements; the learnable has %d', what, i, ...
                      numel(x), counts(i));
            end
            parts{i} = x(:);
        end
        v = vertcat(parts{:});
        return
    end
    if ~(isnumeric(v) || islogical(v) || isa(v, 'dlarray'))
        error('hessiancore:invalidInput', '%s must be a numeric vector or a Learnables-shaped table, got a %s', ...
              what, class(v));
    end
    v = hcToDouble(v);
    if isvector(v) && numel(v) == P
        v = v(:);
    elseif size(v, 1) ~= P || ndims(v) > 2
        error('hessiancore:invalidInput', '%s has size [%s]; NET has %d learnable parameters (P x 1 or P x K)', ...
              what, num2str(size(v)), P);
    end
    if any(~isfinite(v(:)))
        error('hessiancore:nonFinite', '%s contains NaN or Inf', what);
    end
end
