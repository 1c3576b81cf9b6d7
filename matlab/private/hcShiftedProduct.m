function out = hcShiftedProduct(prob, v, shift)
    % HCSHIFTEDPRODUCT  (H + SHIFT * I) * V for pcg, remembering the least curvature met (internal).
    %   Y = HCSHIFTEDPRODUCT(PROB, V, SHIFT) returns (H + SHIFT I) V (hcModelHvp) and records
    %   min over calls of v' (H + SHIFT I) v / v' v. HCSHIFTEDPRODUCT('reset') forgets it;
    %   C = HCSHIFTEDPRODUCT('least') returns it (Inf before any call). A value <= 0 proves that
    %   H + SHIFT I is not positive definite, whichever vectors pcg multiplied.
    persistent least
    if ischar(prob)
        if strcmp(prob, 'reset') || isempty(least)
            least = Inf;
        end
        out = least;
        return
    end
    out = hcModelHvp(prob, v) + shift * v;
    norms = sum(v.^2, 1);
    curvature = sum(v .* out, 1) ./ norms;
    if isempty(least)
        least = Inf;
    end
    least = min([least, curvature(norms > 0)]);
end
