function varargout = gather(varargin)
    % Test double of MATLAB's gather: for arrays that are neither gpuArray, distributed nor tall,
    % gather(X) returns X unchanged (MATLAB documentation). Octave has no gather.
    varargout = varargin;
end
